"""A frame fuzzer for hakit: hostile input against a master process over real TCP.

``python -m fuzz`` (``make fuzz``) starts a master and a healthy replica in processes of their
own on 127.0.0.1, attaches a writer, and sends the master seeded cases: random bytes, random
payloads behind valid length prefixes, random msgpack, mutated real frames of every kind
(handshakes, channel traffic, replica-side frames), lying and oversized prefixes, frames of
costly shapes, slow frames and partial frames held open. See `fuzz._run` for the checks and
`fuzz._frames` for the generator; results are recorded in ``fuzz/RESULTS.md``.
"""
