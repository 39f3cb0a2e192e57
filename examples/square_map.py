"""Square numbers on every core with Pool.map: the tutorial's first example.

    python examples/square_map.py

No ``if __name__ == "__main__":`` guard is needed: corepool's workers never
import this script.
"""

import corepool


def square(x: int) -> int:
    return x * x


with corepool.Pool() as pool:
    squares = pool.map(square, range(10))

print(squares)
