"""The console (SPEC 7.4, 8.2): the agents' and supervisors' pages and the sign-in pages, served
by the service itself.

The pages are server-rendered shells (Jinja2) and a few hand-written ES modules; everything they
show comes from the public API with the signed-in person's session, like any other dashboard's.
The console adds no privileged path into the service: it is also the proof that the API is enough.
"""

from fastapi import FastAPI

from app.console import pages, signin


def install(app: FastAPI) -> None:
    app.include_router(pages.router)
    app.include_router(signin.router)
    app.mount(
        pages.STATIC_PATH,
        pages.ConsoleStaticFiles(directory=pages.HERE / "static"),
        name="console-static",
    )


__all__ = ["install"]
