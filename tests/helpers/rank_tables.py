"""HCCL rank tables as CANN's hccl_tools.py writes them (versions 1.0 and 1.2), built from device entries."""


def device(device_id, rank_id, **extra):
    return {"device_id": str(device_id), "device_ip": f"192.168.100.{101 + int(device_id)}", "rank_id": str(rank_id),
            **extra}


def table_1_0(*devices):
    """As hccl_tools.py writes it for one server."""
    return {"status": "completed", "version": "1.0", "server_count": "1",
            "server_list": [{"server_id": "10.0.0.1", "device": list(devices), "host_nic_ip": "reserve"}]}


def table_1_2(*devices):
    return {"status": "completed", "version": "1.2", "server_count": "1",
            "server_list": [{"server_id": "node_0", "host_ip": "10.0.0.1", "device": list(devices)}],
            "super_pod_list": [{"super_pod_id": "0", "server_list": [{"server_id": "node_0"}]}]}
