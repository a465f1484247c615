"""Model definitions of the scratch ``ultralytics`` fixture package."""
