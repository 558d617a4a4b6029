"""Forensic watermarking: marks that trace a leaked picture to the viewer it was shown to.

One home for the watermark's logic, which media/ (live marked copies), recorder/ (exports,
replays, `python -m recorder trace`) and signalling/ (the live policy) import. Modules, one
job each: pattern (the key's tile), ecc (CRC-16 + convolutional code of the id), embed
(invisible + visible marks), detect (finding and decoding a mark in a clip), registry (who
was issued which id), trace (a clip -> a verdict and its report).

The cut: registry and trace work on any log with the audit log's interface (IssueLog), so
this package never imports recorder/ (which imports it): where the log and the pattern key
live is recorder/watermark_store.py. Its one import outside itself is media.fonts (a leaf,
shared with annotate/) for the visible label; it never imports the control plane.
This module imports nothing, so the registry loads without numpy, OpenCV or PyAV.
"""
