"""The console (SPEC 7.4): the agents' and supervisors' pages, served by the service itself.

The pages are server-rendered shells (Jinja2) and a few hand-written ES modules; everything they
show comes from the public API with the signed-in agent's token, like any other dashboard's. The
console adds no privileged path into the service: it is also the proof that the API is enough.
"""

from app.console.pages import install

__all__ = ["install"]
