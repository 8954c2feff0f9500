"""The dataset report of a manifest version: `figures` (the numbers, from the tables in columnar form),
`plots` (matplotlib PNGs), `page` (one self-contained HTML page) and `build` (all of it into a folder).
Import a name from the module that defines it."""
