"""A sample Hearth function: greets whoever the JSON body names."""

import platform


def handle(event, context):
    name = "world"
    if event.body:
        name = event.json().get("name", name)
    return {
        "greeting": f"Hello, {name}!",
        "python": platform.python_version(),
        "request_id": context.request_id,
    }
