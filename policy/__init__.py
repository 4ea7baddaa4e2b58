"""The Llama Fed: its process module (policy/process) and the node's record of the spawned Fed."""
