"""The API described: the OpenAPI 3.1 document generated from the wire types (document.py) and the HTML
reference page rendered from that document (page.py). Both are built once at start-up."""
