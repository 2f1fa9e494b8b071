"""Test helpers shared by the area packages (``from tests.support.gen import ...``): tiny tokenizers and models,
throw-away projects, fake responders and servers. All texts and names are invented."""
