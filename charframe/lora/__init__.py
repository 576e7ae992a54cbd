"""LoRA file toolchain: read/write kohya-format files, block-weight merge, exact SVD compression, mixing.

`keys` is the kohya name contract the trainer and the file tools share (module path → key, block
of a key); `format` says what a file's modules are (`FileModule`, `LoraNetwork`) and checks them;
pure tensor math lives in `functional`; reading (one checked reader) and writing in `io`; block
weights and presets in `blocks`. Operations live in `ops/`: `merge`, `compress`, `mix`, `inspect`,
with compress and mix sharing `ops/refactor` and every file operation going through `ops/run`.
Import the submodules directly (`from charframe.lora.io import save_lora_file`) so that importing
this package stays cheap.
"""
