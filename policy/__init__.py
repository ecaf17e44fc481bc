"""MAC's Pulumi policy pack: the pack itself is `__main__.py`, the rules `mac_policies.py`."""
