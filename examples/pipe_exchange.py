"""A parent and a child exchange messages over a pipe.

    python examples/pipe_exchange.py
"""

import corepool


def child(conn: corepool.Connection) -> str:
    """Answer each greeting until the parent says goodbye."""
    while True:
        message = conn.recv()
        if message == "goodbye":
            return "the child said goodbye too"
        conn.send(f"child got: {message}")


parent_end, child_end = corepool.Pipe()
process = corepool.Process(child, args=(child_end,))
process.start()

for greeting in ["hello", "how are you?", [1, 2, 3]]:
    parent_end.send(greeting)
    print(parent_end.recv())
parent_end.send("goodbye")
print(process.result(timeout=30))
