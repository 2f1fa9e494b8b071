"""On-disk formats: one module per format, each with its format constant, a typed record and ``read()``/``write()``
(validation included). Nothing else opens these files."""
