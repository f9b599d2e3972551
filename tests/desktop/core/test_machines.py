"""Machine status derived from the recorded NIST data, observation by observation."""
from __future__ import annotations

import pytest

import recorded_nist as testing
from desktop.core.machines import Fleet, MachineStatus

MAZAK03_DAY = "Mazak03-20161116-20161117.txt"


@pytest.fixture(scope="module")
def devices():
    return testing.load_devices()


def line_of(file_name: str, text: str) -> int:
    """The number of the first SHDR line containing `text`."""
    with open(testing.nist_shdr(file_name), encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if text in line:
                return number
    raise AssertionError(f"{text!r} not in {file_name}")


def fleet_after(devices, device_name: str, file_name: str, last_line: int) -> Fleet:
    device = testing.device_named(devices, device_name)
    fleet = Fleet()
    fleet.set_device(device["device_uuid"], device)
    fleet.observe(o for _, o in testing.shdr_observations(testing.nist_shdr(file_name), device, last_line=last_line))
    return fleet


def test_hurco_with_every_item_unavailable_is_unavailable_not_idle(devices):
    hurco = testing.device_named(devices, "Hurco01")
    fleet = Fleet()
    fleet.set_device(hurco["device_uuid"], hurco)
    fleet.observe(testing.unavailable_observations(hurco, "2016-11-16T20:00:00Z"))
    view = fleet.view(hurco["device_uuid"])
    assert view.status == MachineStatus.UNAVAILABLE
    assert view.availability == "UNAVAILABLE" and view.execution == "UNAVAILABLE"
    assert (view.name, view.model, view.manufacturer) == ("Hurco01", "VMX24", "Hurco")


def test_mazak03_day_start_is_unavailable_then_idle_when_stopped(devices):
    # The file opens with every item UNAVAILABLE (the agent's state before the day).
    first_available = line_of(MAZAK03_DAY, "|avail|AVAILABLE")
    fleet = fleet_after(devices, "Mazak03", MAZAK03_DAY, first_available - 1)
    assert fleet.view("mtc_adapter004").status == MachineStatus.UNAVAILABLE
    # Available, but Execution still UNAVAILABLE: not a guess at idle either.
    fleet = fleet_after(devices, "Mazak03", MAZAK03_DAY, first_available)
    view = fleet.view("mtc_adapter004")
    assert (view.availability, view.execution) == ("AVAILABLE", "UNAVAILABLE")
    assert view.status == MachineStatus.UNAVAILABLE and "execution not reported" in view.reason
    first_stopped = line_of(MAZAK03_DAY, "|execution|STOPPED")
    fleet = fleet_after(devices, "Mazak03", MAZAK03_DAY, first_stopped)
    view = fleet.view("mtc_adapter004")
    assert view.availability == "AVAILABLE" and view.execution == "STOPPED"
    assert view.status == MachineStatus.IDLE  # STOPPED is idle: nothing interrupted


def test_execution_active_is_running_then_fault_is_alarm_then_normal_clears(devices):
    fault_line = line_of(MAZAK03_DAY, "|motion_cond|Fault|791|")
    # Execution turns ACTIVE two lines before the recorded fault.
    running = fleet_after(devices, "Mazak03", MAZAK03_DAY, fault_line - 1).view("mtc_adapter004")
    assert running.execution == "ACTIVE" and running.status == MachineStatus.RUNNING

    alarm = fleet_after(devices, "Mazak03", MAZAK03_DAY, fault_line).view("mtc_adapter004")
    assert alarm.status == MachineStatus.ALARM
    assert alarm.fault_count == 1
    assert "791" in alarm.reason and "MUST INPUT CUTTING SPEED" in alarm.reason

    lines = testing.nist_shdr(MAZAK03_DAY).read_text(encoding="utf-8").splitlines()
    normal_line = next(n for n in range(fault_line + 1, len(lines) + 1) if "|motion_cond|Normal|" in lines[n - 1])
    after = fleet_after(devices, "Mazak03", MAZAK03_DAY, normal_line).view("mtc_adapter004")
    assert after.fault_count == 0
    assert after.execution == "READY" and after.status == MachineStatus.IDLE
    assert after.controller_mode == "AUTOMATIC"


def test_unreachable_agent_makes_the_machine_offline(devices):
    fault_line = line_of(MAZAK03_DAY, "|motion_cond|Fault|791|")
    fleet = fleet_after(devices, "Mazak03", MAZAK03_DAY, fault_line - 1)
    agent = fleet.view("mtc_adapter004").agent
    fleet.set_agent_status(agent, {"agent": agent, "state": "unreachable", "since": "2016-11-16T20:30:00Z",
                                   "last_error": "connection refused", "instance_id": 1})
    view = fleet.view("mtc_adapter004")
    assert view.status == MachineStatus.OFFLINE and "connection refused" in view.reason
    fleet.set_agent_status(agent, {"agent": agent, "state": "connected", "since": "2016-11-16T20:31:00Z",
                                   "last_error": None, "instance_id": 1})
    assert fleet.view("mtc_adapter004").status == MachineStatus.RUNNING


def test_known_device_without_any_data_is_offline_and_views_sort_by_name(devices):
    fleet = Fleet()
    for device in devices:
        fleet.set_device(device["device_uuid"], device)
    views = fleet.views()
    assert [v.name for v in views] == sorted(d["device_name"] for d in devices)
    assert all(v.status == MachineStatus.OFFLINE and v.reason == "no data received" for v in views)
    fleet.set_device("mtc_adapter005", None)  # tombstone
    assert "mtc_adapter005" not in fleet and len(fleet) == len(devices) - 1


def test_gfagie01_recorded_execution(devices):
    file_name = "GFAgie01-20160513-20160514.txt"
    active_line = line_of(file_name, "|execution|ACTIVE")
    view = fleet_after(devices, "GFAgie01", file_name, active_line).view("mtc_adapter001")
    assert view.execution == "ACTIVE"
    assert view.status in (MachineStatus.RUNNING, MachineStatus.ALARM)
    if view.status == MachineStatus.ALARM:
        assert view.fault_count >= 1


def test_machine_reporting_execution_without_availability_shows_what_it_does(devices):
    # Mazak01's 2017 adapter never sends Availability: it stays UNAVAILABLE all day while
    # the machine cuts. Execution ACTIVE must still read as running, not as unavailable.
    day = "Mazak01-20171030-20171031.txt"
    assert line_of(day, "|Mazak01-dtop_1|UNAVAILABLE")
    with open(testing.nist_shdr(day), encoding="utf-8") as lines:
        assert not any("|Mazak01-dtop_1|AVAILABLE" in line or "|avail|AVAILABLE" in line for line in lines)
    fleet = fleet_after(devices, "Mazak01", day, line_of(day, "|execution|ACTIVE"))
    view = fleet.view("mtc_adapter002")
    assert (view.availability, view.execution) == ("UNAVAILABLE", "ACTIVE")
    assert view.status == MachineStatus.RUNNING and view.reason == "availability not reported"
