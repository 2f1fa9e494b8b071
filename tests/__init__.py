"""The test suite, one sub-package per area of ``chatbot/`` (kakao, data, base, train, infer, eval, artifact, formats,
bridge, serve), ``foundation`` for the bottom layer (config, fsio, security, crypto, portable) and ``e2e`` for
whole-pipeline runs. Shared helpers live in ``tests.support``; the fixtures in ``tests/fixtures/`` are invented."""
