"""A minimal Django project whose views enqueue tasks: ``tasks`` holds the queue,
``worker`` is where ``simplepyq worker`` finds it (after setting Django up), and
``wsgi`` starts the workers in the web process when asked to. The how-to guide
"Use it from Django, Flask or FastAPI" explains it."""
