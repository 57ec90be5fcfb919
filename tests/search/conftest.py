from tests.fakes.tavily import fake_tavily  # noqa: F401  (the fixture)
