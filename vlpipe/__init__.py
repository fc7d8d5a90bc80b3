"""vlpipe: a staged toolkit for ALBEF-style vision-language pretraining and retrieval.

The library never prints and never exits; stages in ``vlpipe.stages`` render its progress
callbacks and turn :class:`vlpipe.errors.VlpipeError` into one-line messages.
"""

__version__ = "0.1.0"
