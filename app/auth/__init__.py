"""Sign-in and people (SPEC 8.2): who is calling (``identity``), the secrets that say so
(``tokens``), people and their API tokens (``people``), sessions, passwords and set-password
links, the company's identity provider (``oidc``), and the audit of it all (``audit``)."""
