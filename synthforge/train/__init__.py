"""Bundled student trainers (TRL SFT and DPO) and the preference evaluation; one file per concern."""
