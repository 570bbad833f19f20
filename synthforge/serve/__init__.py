"""``synthforge serve``: an OpenAI-compatible HTTP server over any in-process teacher.

``batcher`` runs concurrent requests together on the teacher, ``protocol`` turns OpenAI request bodies into
sampling parameters and results into OpenAI response objects, ``app`` is the HTTP application."""
