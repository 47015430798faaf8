print("fz-forwarder: not built yet")
