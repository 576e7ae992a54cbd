"""Pose templates from a procedural 3D mannequin, with exact ControlNet control maps.

`generate_templates()` writes FaceTemplate/ and BodyTemplate/ (CONVENTIONS §1-2): the clay
template `f12.png`, `control/<map>/f12.png` for every map, and `overview.png`. Modules, in flow
order: `primitives` (solids with closed-form ray hits) → `mannequin` (the figure) → `camera`
(code → camera) → `render` (depth/normal/part buffers) → `maps`, `openpose` (images) →
`overview` (contact sheet) → `writer` (files: `from charframe.templates.writer import generate_templates`).
"""
