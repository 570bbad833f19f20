"""Bundled student trainers (TRL SFT, DPO, a reward model and RLHF with RLOO), one config + one class each, and the
preference evaluation."""
