from tests.fakes.openrouter import fake_openrouter  # noqa: F401  (the fixture)
from tests.fakes.tavily import fake_tavily  # noqa: F401  (the fixture)
