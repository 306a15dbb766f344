# The compiled twin (_learning.pyx) as type checkers see it: the same contract as _learning_py.
from orxaq_grpc.kernel import Doubles, Floats, Int64s

KIND: str
MAX_SUBWORD_TOKEN: int

def capacity(text: bytes, tags: tuple[bytes, ...]) -> int: ...
def features(text: bytes, tags: tuple[bytes, ...], dim: int, indices: Int64s, values: Doubles) -> int: ...
def vector(text: str, tags: tuple[str, ...], dim: int) -> tuple[Int64s, Doubles, bool]: ...
def linear(
    mean: Floats, var: Floats, indices: Int64s, values: Doubles, n: int, offset: float
) -> tuple[float, float]: ...
def probability(m: float, v: float, beta2: float) -> float: ...
def update(
    mean: Floats,
    var: Floats,
    indices: Int64s,
    values: Doubles,
    n: int,
    offset: float,
    beta2: float,
    passed: bool,
) -> None: ...
