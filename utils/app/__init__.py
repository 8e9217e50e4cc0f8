"""The web app's logic without the UI (scripts/app.py is the gradio layer), one job per module:

- `uploads`: uploaded files -> named pictures (a scored copy and a display copy, decoded once).
- `cache`: SAM 3 results per (image, prompts, references), a browser session's state, the bounded store.
- `results`: a cached result cut at the slider values, the JSON of an image, the tables.
- `render`: the pictures and badges the page shows (display-sized).
- `files`: the app's private folder, the sessions' download folders and what goes in them.
- `access`: who may use the app: the password (flag, environment or file), the login guard, the warning.
- `texts`: the choices and messages of the page (categories, examples, what is missing).
"""
