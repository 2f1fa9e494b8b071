"""On-disk formats: one module per format, each with its format constant, a typed record and ``read()``/``write()``
(validation included). Nothing else opens these files (tests/formats/test_formats_boundary.py checks the model files).

``processed``    data/processed/ (stats.json, tokenizer, memmaps)      ``manifest``    data/raw/manifest.json
``checkpoint``   checkpoints/<run>/*.pt                                 ``artifact``    artifacts/model_latest.pt / .enc
``hf_artifact``  the container of a pretrained-base run's artifact      ``roomfile``    the bridge's rooms/<hash>.json
"""
