print("fz-gateway: not built yet")
