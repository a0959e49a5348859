"""A small web application with a task queue: ``tasks`` holds the queue and its
channels, ``web`` the front end that enqueues. The tutorial "An application with
workers and a web front end" builds it step by step."""
