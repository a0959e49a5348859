"""The views: one enqueues and answers at once, one shows a task."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse

from django_app.tasks import queue, send_welcome


def signup(request: HttpRequest) -> JsonResponse:
    if request.method != "POST":
        return JsonResponse({"error": "POST an email address"}, status=405)
    email = request.POST.get("email", "")
    if "@" not in email:
        return JsonResponse({"error": f"not an email address: {email!r}"}, status=400)
    task_id = send_welcome.enqueue({"email": email}, retries=3)
    return JsonResponse({"task": task_id}, status=202)


def task(request: HttpRequest, task_id: int) -> JsonResponse:
    found = queue.get_task(task_id)
    if found is None:
        return JsonResponse({"error": f"no task {task_id}"}, status=404)
    return JsonResponse({"status": found.status, "result": found.result})
