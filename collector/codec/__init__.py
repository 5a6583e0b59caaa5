"""Encodings: OTLP protobuf and JSON decoding, JSON to protobuf, file framing and sniffing, events, ticket documents."""
