"""The merchandiser's page: a Gradio app that is a client of the gateway, like any shop.

It reaches the model only through the Cohere SDK over HTTP (base URL and key from its settings) and
imports nothing of the gateway's server code but its wire types (gateway/schemas.py). Map: ``__main__``
the ``rerank-demo`` command, ``settings`` its configuration, ``page`` the Blocks layout and handlers,
``client`` the SDK calls and the error sentences, ``products`` reading lines / CSV / JSON, ``models`` the
deployment's models as the page offers them, ``compare`` two models' rankings and the moves between them,
``render`` the results, ``examples`` the preloaded queries.
"""
