"""Tool calls: map the agent's tool_call messages to GPIO, shell and HTTP actions."""
