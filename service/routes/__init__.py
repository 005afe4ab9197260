"""HTTP routes, one module per resource; `service.app.create_app` mounts them."""
