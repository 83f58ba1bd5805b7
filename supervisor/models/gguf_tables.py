"""The GGUF format's constants that reading a header needs, as plain tables.

Written out here, as the GGUF format defines them (value type ids, each ggml tensor type's
block size, the ``general.file_type`` ids), rather than imported from the ``gguf`` package:
``import gguf`` pulls in numpy, about 25 MB of the gateway's resident memory for three small
tables. ``tests/unit/test_gguf_tables.py`` checks them against the installed package (a dev
dependency), so a format revision that adds a type fails a test instead of drifting silently.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

# GGUFValueType: the key/value types of the header, by their id.
VALUE_UINT8: Final = 0
VALUE_INT8: Final = 1
VALUE_UINT16: Final = 2
VALUE_INT16: Final = 3
VALUE_UINT32: Final = 4
VALUE_INT32: Final = 5
VALUE_FLOAT32: Final = 6
VALUE_BOOL: Final = 7
VALUE_STRING: Final = 8
VALUE_ARRAY: Final = 9
VALUE_UINT64: Final = 10
VALUE_INT64: Final = 11
VALUE_FLOAT64: Final = 12

# GGML_QUANT_SIZES: ggml tensor type id -> (elements per block, bytes per block).
QUANT_SIZES: Final[Mapping[int, tuple[int, int]]] = {
    0: (1, 4),  # F32
    1: (1, 2),  # F16
    2: (32, 18),  # Q4_0
    3: (32, 20),  # Q4_1
    6: (32, 22),  # Q5_0
    7: (32, 24),  # Q5_1
    8: (32, 34),  # Q8_0
    9: (32, 40),  # Q8_1
    10: (256, 84),  # Q2_K
    11: (256, 110),  # Q3_K
    12: (256, 144),  # Q4_K
    13: (256, 176),  # Q5_K
    14: (256, 210),  # Q6_K
    15: (256, 292),  # Q8_K
    16: (256, 66),  # IQ2_XXS
    17: (256, 74),  # IQ2_XS
    18: (256, 98),  # IQ3_XXS
    19: (256, 50),  # IQ1_S
    20: (32, 18),  # IQ4_NL
    21: (256, 110),  # IQ3_S
    22: (256, 82),  # IQ2_S
    23: (256, 136),  # IQ4_XS
    24: (1, 1),  # I8
    25: (1, 2),  # I16
    26: (1, 4),  # I32
    27: (1, 8),  # I64
    28: (1, 8),  # F64
    29: (256, 56),  # IQ1_M
    30: (1, 2),  # BF16
    34: (256, 54),  # TQ1_0
    35: (256, 66),  # TQ2_0
    39: (32, 17),  # MXFP4
    40: (64, 36),  # NVFP4
    41: (128, 18),  # Q1_0
}

# LlamaFileType (``general.file_type``) -> its quantization name, without gguf's "MOSTLY_"
# prefix; ALL_F32 reads "F32" and GUESSED (1024) has no name.
FILE_TYPE_NAMES: Final[Mapping[int, str]] = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    21: "Q2_K_S",
    22: "IQ3_XS",
    23: "IQ3_XXS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_M",
    28: "IQ2_S",
    29: "IQ2_M",
    30: "IQ4_XS",
    31: "IQ1_M",
    32: "BF16",
    36: "TQ1_0",
    37: "TQ2_0",
    38: "MXFP4_MOE",
    39: "NVFP4",
    40: "Q1_0",
}
