"""Teacher backends, one module each; each exports one ``BACKEND`` record (see ``teachers.config.Backend``).

The registry that names them is ``teachers.factory.BACKENDS``: the only place that knows which exist."""
