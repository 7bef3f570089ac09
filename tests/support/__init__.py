"""What the tests share: handles on the stack and how a test gateway is configured (stack.py, the place to
start), processes, stand-ins for vLLM and the entrypoint's children, and the yardsticks tests hold the gateway
to. Test modules and benchmarks import these; conftest.py builds its fixtures from them and is imported by
nobody. Each module's docstring says what it holds."""
