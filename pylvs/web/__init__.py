"""The web configuration tool (``pylvs web``): Piranha's panels rebuilt (docs/web.md).

auth.py (password file, sessions, CSRF, login limit), forms.py (the panels' fields),
store.py (drafts, checks, atomic apply), client.py (the control sockets), view.py
(CONTROL/MONITORING rows), app.py (the pages), server.py (bind, drop root, serve).
"""
