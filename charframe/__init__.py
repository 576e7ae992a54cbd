"""charframe: consistent anime-character LoRAs from file and folder names.

The flow, one module per idea: names → captions/TOML → (templates → generation → cleaning)
→ training → LoRA file tools → pipeline. The CLI (`charframe.cli`) is a thin layer over these.
"""

__version__ = "0.1.0"
