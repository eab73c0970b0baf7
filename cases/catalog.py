"""The catalog: every seed example verbatim, then the edges beyond the seeds.

Adding a case is adding one `Case(...)` entry to CASES. Logits are float64 before casting; the
harness rounds them to each tested dtype and grades against a reference of the rounded values.
"""

from __future__ import annotations

import numpy as np

from cases.case import Case

INF = np.inf
NAN = np.nan
# ln of the largest finite value, ln(numpy.finfo(dtype).max) rounded: where exp overflows
EXP_OVERFLOW = {"fp16": 11.09, "fp32": 88.72, "fp64": 709.78}


def _normal(seed: int, shape: tuple[int, ...], scale: float) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, scale, size=shape)


def _randint(seed: int, n: int, shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(seed + 1).integers(0, n, size=shape)


SEED002 = [55.8906, -114.5621, 6.3440, -30.2473, -44.1440]
SEED003_ANSWERS = np.arange(50) % 10

_seeds: list[Case] = [
    Case("seed000_batch", "seeds 000/001: 3x3 batch whose middle row [1000, 1, -1000] breaks naive softmax",
         [[2.0, 1.0, 0.1], [1000.0, 1.0, -1000.0], [3.0, 2.0, 1.0]], ("seed", "overflow", "underflow"),
         targets=[0, 2, 1]),
    *[
        Case(f"seed002_T{t:g}", f"seed 002: 5-vector, one-hot target at index 2, temperature {t:g}",
             SEED002, ("seed", "temperature", "underflow"), targets=np.array(2), temperature=t)
        for t in (1.0, 10.0, 1.2, 2.0, 0.5, 0.1, 0.01, 100.0)
    ],
    Case("seed003_linspace500", "seed 003: linspace(-1, 500, 500) as 50x10, answers arange(50) % 10",
         np.linspace(-1, 500, 500).reshape(50, 10), ("seed", "overflow"), targets=SEED003_ANSWERS),
    Case("seed003_linspace5e5", "seed 003: linspace(-1, 5e5, 500) as 50x10 (naive softmax all NaN)",
         np.linspace(-1, 5e5, 500).reshape(50, 10), ("seed", "overflow"), targets=SEED003_ANSWERS),
    Case("seed003_linspace1", "seed 003: linspace(-1, 1, 500) as 50x10 (the well-behaved check)",
         np.linspace(-1, 1, 500).reshape(50, 10), ("seed",), targets=SEED003_ANSWERS),
    Case("seed003_linspace1e5", "seed 003: linspace(-1, 1e5, 500) as 50x10; stable CE starts 1803.6252505",
         np.linspace(-1, 1e5, 500).reshape(50, 10), ("seed", "overflow"), targets=SEED003_ANSWERS),
    Case("seed004_vec", "seed 004: [1, 2, 3, 4, 5] (stable softmax 0.01165623 ... 0.63640865)",
         [1.0, 2.0, 3.0, 4.0, 5.0], ("seed",), targets=np.array(4)),
    Case("seed004_big", "seed 004 test1: [12345, 67890, 99999999] as a 1-D array",
         [12345.0, 67890.0, 99999999.0], ("seed", "overflow"), targets=np.array(0)),
    Case("seed004_big_2d", "seed 004 test2: [[12345, 67890, 99999999], [123, 678, 88888888]]",
         [[12345.0, 67890.0, 99999999.0], [123.0, 678.0, 88888888.0]], ("seed", "overflow"),
         targets=[2, 0]),
    Case("seed004_list", "seed 004 test3: the plain list [12345, 67890, 999999999]",
         [12345, 67890, 999999999], ("seed", "overflow", "list-input"), targets=np.array(1)),
    Case("seed004_list_2d", "seed 004 test4: the nested list [[12345, 67890, 999999999]]",
         [[12345, 67890, 999999999]], ("seed", "overflow", "list-input"), targets=[2]),
]

_edges: list[Case] = []
for key, thr in EXP_OVERFLOW.items():
    for label, v in (("below", thr - 0.05), ("above", thr + 0.05), ("far", 2 * thr)):
        _edges.append(Case(
            f"exp_edge_{key}_{label}", f"largest logit {v:.2f}: {label} ln(max) of {key} ({thr})",
            [v, v - 1.0, 0.0, -v], ("overflow", "edge"), targets=np.array(3)))

_sum_overflow = [
    Case(f"sum_overflow_{key}", f"{k} entries at {v}: no single exp overflows {key}, their sum does",
         np.full((2, k), v) - np.array([[0.0], [0.25]]), ("overflow", "sum-overflow", "ties"))
    for key, v, k in (("fp16", 10.5, 8), ("fp32", 88.0, 16), ("fp64", 709.0, 16))
]

_underflow = [
    Case("all_negative_fp64", "every logit near -1000: naive exp underflows to 0/0",
         [[-1000.0, -1001.0, -1002.0], [-1000.0, -1000.5, -1e4]], ("underflow",)),
    Case("all_negative_fp32", "every logit below -104: naive fp32 exp underflows to 0/0",
         [-110.0, -111.0, -120.0], ("underflow",), targets=np.array(2)),
    Case("all_negative_fp16", "every logit below -17: naive fp16 exp underflows to 0/0",
         [-20.0, -21.0, -25.0, -18.0], ("underflow",), targets=np.array(1)),
    Case("huge_negative", "logits around -1e30 (beyond fp16 range: -inf after casting)",
         [-1e30, -1e30 - 1e15, -2e30], ("underflow", "special")),
]

_mixed = [
    Case("mixed_extremes_1e4", "mixed +-1e4 with a near-tie at the top",
         [[1e4, -1e4, 0.0, 1e4 - 1.0], [-1e4, 1e4, 5.0, -5.0]], ("overflow", "underflow")),
    Case("mixed_extremes_1e30", "+-1e30 (infinite once cast to fp16)",
         [1e30, -1e30, 0.0, 5.0], ("overflow", "underflow", "special")),
    Case("mixed_extremes_fp16_max", "+-60000: representable in fp16, exp of it is not",
         [60000.0, -60000.0, 0.0], ("overflow", "underflow", "edge"), targets=np.array(1)),
    Case("large_offset_1e6", "1e6 + [0, 1, 2]: cancellation after rounding (bf16 merges them)",
         1e6 + np.array([[0.0, 1.0, 2.0], [2.0, 0.0, 1.0]]), ("overflow", "cancellation")),
    Case("large_offset_1e8", "1e8 + [0, 8, 16]: differences near the fp32 spacing",
         1e8 + np.array([0.0, 8.0, 16.0]), ("overflow", "cancellation"), targets=np.array(0)),
]

_mask = [
    Case("mask_partial", "-inf masked entries in an ordinary row",
         [[3.0, -INF, 1.0, -INF], [-INF, 0.5, 0.25, 2.0]], ("mask", "special"), targets=[0, 3],
         probs=[[0.5, 0.0, 0.5, 0.0], [0.0, 0.2, 0.3, 0.5]]),
    Case("mask_causal", "8x8 causal attention scores with -inf above the diagonal",
         np.where(np.tril(np.ones((8, 8))) > 0, _normal(11, (8, 8), 3.0), -INF), ("mask", "special"),
         targets=np.arange(8) // 2),
    Case("mask_full_row", "a fully masked row beside a normal one: IEEE NaN (safe softmax: 0)",
         [[-INF, -INF, -INF], [1.0, 2.0, 3.0]], ("mask", "special")),
    Case("mask_target_masked", "target on a masked entry: CE is +inf",
         [[2.0, -INF, 1.0]], ("mask", "special"), targets=[1], probs=[[0.0, 1.0, 0.0]]),
    Case("mask_all_but_one", "one live entry, the rest -inf: softmax is exactly one-hot",
         [[-INF, 7.5, -INF, -INF]], ("mask", "special"), targets=[1]),
]

_special = [
    Case("posinf_entry", "a +inf logit: softmax NaN by convention, logsumexp +inf",
         [[INF, 1.0, 2.0], [0.0, 1.0, 2.0]], ("special",), targets=[1, 2]),
    Case("posinf_two", "two +inf logits in a row",
         [INF, INF, 0.0], ("special",), targets=np.array(2)),
    Case("nan_entry", "a NaN logit poisons its row, not the others",
         [[NAN, 1.0, 2.0], [0.0, 1.0, 2.0]], ("special",)),
    Case("inf_and_neginf", "+inf and -inf in one row",
         [INF, -INF, 0.0], ("special", "mask"), targets=np.array(2)),
]

_ties = [
    Case("ties_equal", "all logits equal: uniform softmax",
         [[5.0, 5.0, 5.0, 5.0], [0.0, 0.0, 0.0, 0.0]], ("ties",)),
    Case("ties_at_max_extreme", "two maxima at 1000 and a -1000",
         [1000.0, 1000.0, -1000.0], ("ties", "overflow"), targets=np.array(2)),
    Case("ties_at_max_small", "tie at the max: log1p variant must count both",
         [[0.0, 0.0, -1.0], [7.0, 7.0, 7.0]], ("ties", "log1p")),
    Case("constant_large", "eight logits of 1e4",
         np.full((1, 8), 1e4), ("ties", "overflow")),
    Case("ties_4096_equal", "4,096 equal logits: a bfloat16 running sum of the exps stalls at 256",
         np.full((1, 4096), 2.5), ("ties",), targets=[17]),
]

_single = [
    Case("single_class", "one class per row: softmax 1, log_softmax 0, CE 0",
         [[3.0], [-1000.0], [1e4], [0.0]], ("single-class", "overflow")),
]

_subnormal = [
    Case("subnormal_diffs_fp64", "differences of 1e-310 (fp64 subnormal)",
         [1e-310, 0.0, -1e-310], ("subnormal",), targets=np.array(0)),
    Case("subnormal_diffs_fp32", "differences of 1e-40 (fp32 subnormal, zero in fp16)",
         [1e-40, 0.0, -1e-40, 2e-40], ("subnormal",), targets=np.array(3)),
    Case("subnormal_probs_fp64", "probability exp(-720) ~ 2e-313, subnormal in fp64",
         [0.0, -720.0, -740.0], ("subnormal", "underflow"), targets=np.array(1)),
    Case("subnormal_probs_fp32", "probability exp(-95) ~ 5e-42, subnormal in fp32",
         [0.0, -95.0, -100.0], ("subnormal", "underflow"), targets=np.array(1)),
    Case("subnormal_probs_fp16", "probability exp(-12) ~ 6e-6, subnormal in fp16",
         [0.0, -12.0, -15.0], ("subnormal", "underflow"), targets=np.array(1)),
]

_large = [
    Case("vocab_131072_normal", "4 rows x 131,072 classes, N(0, 1)",
         _normal(1, (4, 131072), 1.0), ("large-vocab", "random"), targets=_randint(1, 131072, (4,))),
    Case("vocab_131071_odd", "2 rows x 131,071 classes (odd width), N(0, 4)",
         _normal(2, (2, 131071), 4.0), ("large-vocab", "random"), targets=_randint(2, 131071, (2,))),
    Case("vocab_152064_spiky", "2 rows x 152,064 classes, N(0, 2) with one +40 spike per row",
         _normal(3, (2, 152064), 2.0) + np.eye(2, 152064, 7) * 40.0, ("large-vocab", "random"),
         targets=[7, 100]),
    Case("vocab_262147_odd", "1 row x 262,147 classes (odd, > 2^18), N(0, 1)",
         _normal(4, (1, 262147), 1.0), ("large-vocab", "random"), targets=[262146]),
]

_random = [
    *[
        Case(f"normal_scale_{s:g}", f"16x100 logits from N(0, {s:g})",
             _normal(20 + i, (16, 100), s), ("random",), targets=_randint(20 + i, 100, (16,)))
        for i, s in enumerate((1.0, 10.0, 100.0, 1e4))
    ],
    Case("batch_3d", "3-D batch 4x5x33, N(0, 3): any leading batch shape",
         _normal(30, (4, 5, 33), 3.0), ("random", "batch-shape"), targets=_randint(30, 33, (4, 5))),
    Case("target_at_min_scale10", "targets at each row's smallest logit, N(0, 10)",
         _normal(31, (8, 50), 10.0), ("random", "target-min"),
         targets=np.argmin(_normal(31, (8, 50), 10.0), axis=-1)),
    Case("target_at_min_fp16", "target at the smallest logit; CE = 200 fits fp16",
         [100.0, 0.0, -100.0], ("target-min",), targets=np.array(2)),
    Case("label_smoothing", "probability targets 0.9 one-hot + 0.1 uniform, N(0, 5)",
         _normal(32, (8, 20), 5.0), ("random", "soft-targets"),
         probs=0.9 * np.eye(20)[np.arange(8) % 20] + 0.1 / 20),
    Case("soft_targets_underflow", "spread probability targets on a row whose softmax underflows",
         [[50.0, -80.0, -120.0, 0.0]], ("soft-targets", "underflow"), probs=[[0.25, 0.25, 0.25, 0.25]]),
]

_temperature = [
    *[
        Case(f"llm_vocab32000_T{t:g}", f"LLM-like 2x32000 logits N(0, 3) at sampling temperature {t:g}",
             _normal(40, (2, 32000), 3.0), ("temperature", "random"), targets=[0, 1], temperature=t)
        for t in (1.0, 0.7, 0.01)
    ],
    Case("normal_scale10_T100", "16x100 N(0, 10) at T = 100 (near-uniform)",
         _normal(21, (16, 100), 10.0), ("temperature", "random"), temperature=100.0),
    Case("normal_scale10_T0.01", "16x100 N(0, 10) at T = 0.01: z/T reaches 1e3, overflows fp16",
         _normal(21, (16, 100), 10.0), ("temperature", "random", "overflow"), temperature=0.01),
    Case("temperature_T1e-6", "tiny logits at T = 1e-6 (subnormal in fp16): z / T = [3, 1, -2, 0]",
         [[3e-6, 1e-6, -2e-6, 0.0]], ("temperature", "edge", "subnormal"), temperature=1e-6),
    Case("temperature_T1e5", "logits near fp16's max at T = 1e5 (past fp16's range): z / T = [0.6, 0.3, -0.3, 0]",
         [[6e4, 3e4, -3e4, 0.0]], ("temperature", "edge"), temperature=1e5),
]

_log1p = [
    Case("log1p_tiny_rest", "[0, -40, -50]: log_softmax at the max is ~-4e-18",
         [0.0, -40.0, -50.0], ("log1p",), targets=np.array(0)),
    Case("log1p_dominant_rows", "one dominant logit per row, gaps 20..60",
         [[20.0, 0.0, -1.0], [60.0, 0.0, 1.0], [35.0, 34.0, -35.0]], ("log1p",), targets=[0, 0, 1]),
]

CASES: tuple[Case, ...] = tuple(
    _seeds + _edges + _sum_overflow + _underflow + _mixed + _mask + _special + _ties + _single
    + _subnormal + _large + _random + _temperature + _log1p
)

if len({c.name for c in CASES}) != len(CASES):  # pragma: no cover - guards catalog edits
    raise RuntimeError("duplicate case names in the catalog")
