"""Pure data: broker messages, task message envelopes, codecs. No I/O happens here."""
