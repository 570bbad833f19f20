"""Publishing a finished run to the Hugging Face Hub (``synthforge push``)."""
