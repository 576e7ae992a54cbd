"""Model families (SD1.x, SDXL, ...): the one place that says what differs between them.

A family is data (`charframe/data/families/<id>.toml`, read by `charframe.families.family`) plus, where a rule
is code rather than a table, one small module of pure functions named after it (`charframe.families.sdxl`).
Everything else — detection, loading, LoRA key names, block weights, training conditioning, recipes — asks the
family instead of assuming SD1.x. This package imports nothing above `util`, so every layer may ask it.
"""
