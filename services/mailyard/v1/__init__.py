"""Generated protobuf code for the wire format in ``proto/mailyard/v1`` (``make proto``)."""
