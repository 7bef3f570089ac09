// Run by tests/test_clients.py with the system's node, from a directory whose node_modules is the one
// scripts/install-node-clients.sh fills. Ranks the products it reads on stdin through the gateway's v2 rerank
// with the Cohere TypeScript SDK, nothing changed but the base URL and the key, then sends a bad request, and
// prints what the SDK parsed (its camelCase objects) and the error it raised, as JSON.
"use strict";

const { CohereClientV2, CohereError } = require("cohere-ai");

async function main() {
  const request = JSON.parse(require("fs").readFileSync(0, "utf8"));
  const cohere = new CohereClientV2({ token: process.env.RERANK_KEY, baseUrl: process.env.RERANK_BASE_URL });
  const response = await cohere.rerank({
    model: "rerank-v3.5",
    query: request.query,
    documents: request.products,
  });
  let refused = null;
  try {
    await cohere.rerank({ model: "rerank-v3.5", query: "", documents: request.products }, { maxRetries: 0 });
  } catch (error) {
    if (!(error instanceof CohereError)) throw error;
    refused = { statusCode: error.statusCode, body: error.body };
  }
  console.log(JSON.stringify({ response, refused }));
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
