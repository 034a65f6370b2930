"""The demo of ``callqueue serve --demo``: a realistic book of leads (``book``) and how it is
written (``seed``)."""
