"""LoRA file toolchain: read/write kohya-format files, block-weight merge, exact SVD compression, mixing.

Pure tensor math lives in `functional`; file reading/writing and metadata in `io`; the SD1.x block map
and presets in `blocks`; one module per operation (`merge`, `compress`, `mix`, `inspect`). Import the
submodules directly (`from charframe.lora.io import save_lora_file`) so that importing this package
stays cheap.
"""
