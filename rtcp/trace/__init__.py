"""Seeing TCP work: JSON-lines traces, pcap capture, ladder diagrams and time-sequence plots.

- writer.TraceWriter: the connection's event hook (ConnectionConfig.event_hook) -> JSON lines
- proxy_trace.TracingImpairer: records every impairment decision of the proxy
- pcap.PcapWriter / TapSocket / read_pcap: what a process sent and received, for Wireshark
- ladder.render_ladder: the ASCII ladder diagram (`rtcp explain`)
- plot.plot_trace: the time-sequence graph (`rtcp plot`, needs matplotlib)

docs/trace-format.md documents every event and field.
"""
