"""The ChirpStack API stand-in over real gRPC: tokens as ChirpStack checks them, its errors for
duplicates, missing objects and malformed arguments, lists, and fault injection."""

import grpc
import pytest
from chirpstack_api import api, common

from simulators.chirpstack_api import ChirpStackAPI

EUI = "0102030405060708"
KEY = "000102030405060708090a0b0c0d0e0f"


@pytest.fixture
def cs():
    with ChirpStackAPI() as server:
        yield server


@pytest.fixture
def stubs(cs):
    channel = grpc.insecure_channel(cs.target)
    yield {"app": api.ApplicationServiceStub(channel), "dp": api.DeviceProfileServiceStub(channel),
           "dev": api.DeviceServiceStub(channel), "gw": api.GatewayServiceStub(channel)}
    channel.close()


def auth(token):
    return [("authorization", "Bearer " + token)]


def code_of(fn, *args, **kwargs):
    with pytest.raises(grpc.RpcError) as e:
        fn(*args, **kwargs)
    return e.value.code(), e.value.details()


def make_app(cs, stubs, token=None, name="site"):
    return stubs["app"].Create(api.CreateApplicationRequest(application=api.Application(
        name=name, tenant_id=cs.tenant_id)), metadata=auth(token or cs.token)).id


def make_profile(cs, stubs):
    return stubs["dp"].Create(api.CreateDeviceProfileRequest(device_profile=api.DeviceProfile(
        name="p", tenant_id=cs.tenant_id, region=common.Region.EU868, supports_otaa=True)),
        metadata=auth(cs.token)).id


def make_device(cs, stubs, eui=EUI, name="d1"):
    app, dp = make_app(cs, stubs), make_profile(cs, stubs)
    stubs["dev"].Create(api.CreateDeviceRequest(device=api.Device(dev_eui=eui, name=name, application_id=app,
                                                                  device_profile_id=dp)), metadata=auth(cs.token))
    return app, dp


def test_tokens_are_checked_as_chirpstack_does(cs, stubs):
    req = api.ListApplicationsRequest(tenant_id=cs.tenant_id, limit=10)
    assert code_of(stubs["app"].List, req) == (grpc.StatusCode.UNAUTHENTICATED, "no authorization provided")
    assert code_of(stubs["app"].List, req, metadata=auth("not-a-key"))[0] == grpc.StatusCode.UNAUTHENTICATED
    assert code_of(stubs["app"].List, req, metadata=[("authorization", cs.token)]) == (
        grpc.StatusCode.UNAUTHENTICATED, "authorization metadata must be in format 'Bearer <TOKEN>")
    assert stubs["app"].List(req, metadata=auth(cs.token)).total_count == 0
    assert stubs["app"].List(req, metadata=auth(cs.admin_token)).total_count == 0
    # a tenant key reaches only its own tenant
    other = cs.add_api_key(cs.add_tenant("elsewhere"))
    assert code_of(stubs["app"].List, req, metadata=auth(other))[0] == grpc.StatusCode.UNAUTHENTICATED
    assert cs.mutations == 0


def test_missing_objects_are_not_found_for_admins_and_unauthenticated_for_tenant_keys(cs, stubs):
    # ChirpStack's validator counts the caller's rows: a tenant key sees no object, an admin NOT_FOUND
    req = api.GetDeviceRequest(dev_eui=EUI)
    assert code_of(stubs["dev"].Get, req, metadata=auth(cs.token)) == (grpc.StatusCode.UNAUTHENTICATED, "")
    assert code_of(stubs["dev"].Get, req, metadata=auth(cs.admin_token)) == (
        grpc.StatusCode.NOT_FOUND, "Object does not exist (id: %s)" % EUI)
    make_device(cs, stubs)
    assert stubs["dev"].Get(req, metadata=auth(cs.token)).device.name == "d1"
    assert code_of(stubs["dev"].GetKeys, api.GetDeviceKeysRequest(dev_eui=EUI), metadata=auth(cs.token))[0] == \
        grpc.StatusCode.NOT_FOUND
    other = cs.add_api_key(cs.add_tenant("elsewhere"))
    assert code_of(stubs["dev"].Get, req, metadata=auth(other))[0] == grpc.StatusCode.UNAUTHENTICATED


def test_duplicates_are_a_unique_violation_as_in_chirpstack_v4(cs, stubs):
    app, dp = make_device(cs, stubs)
    again = api.CreateDeviceRequest(device=api.Device(dev_eui=EUI.upper(), name="again", application_id=app,
                                                      device_profile_id=dp))
    assert code_of(stubs["dev"].Create, again, metadata=auth(cs.token)) == (
        grpc.StatusCode.INTERNAL, 'duplicate key value violates unique constraint "device_pkey"')
    keys = api.CreateDeviceKeysRequest(device_keys=api.DeviceKeys(dev_eui=EUI, nwk_key=KEY, app_key="0" * 32,
                                                                  gen_app_key="0" * 32))
    stubs["dev"].CreateKeys(keys, metadata=auth(cs.token))
    assert code_of(stubs["dev"].CreateKeys, keys, metadata=auth(cs.token))[0] == grpc.StatusCode.INTERNAL
    assert len(cs.devices) == 1 and cs.devices[EUI].name == "d1"


def test_duplicates_can_answer_already_exists_as_chirpstack_v3_did(stubs):
    with ChirpStackAPI(duplicate_code=grpc.StatusCode.ALREADY_EXISTS) as cs:
        channel = grpc.insecure_channel(cs.target)
        s = {"app": api.ApplicationServiceStub(channel), "dp": api.DeviceProfileServiceStub(channel),
             "dev": api.DeviceServiceStub(channel)}
        app, dp = make_device(cs, s)
        again = api.CreateDeviceRequest(device=api.Device(dev_eui=EUI, name="x", application_id=app,
                                                          device_profile_id=dp))
        assert code_of(s["dev"].Create, again, metadata=auth(cs.token))[0] == grpc.StatusCode.ALREADY_EXISTS
        channel.close()


def test_arguments_are_validated_like_chirpstack(cs, stubs):
    md = auth(cs.token)
    app, dp = make_device(cs, stubs)
    bad_eui = api.CreateDeviceRequest(device=api.Device(dev_eui="01020304", name="x", application_id=app,
                                                        device_profile_id=dp))
    assert code_of(stubs["dev"].Create, bad_eui, metadata=md) == (grpc.StatusCode.INTERNAL, "Invalid string length")
    bad_uuid = api.CreateDeviceRequest(device=api.Device(dev_eui="1112131415161718", name="x",
                                                         application_id="app-1", device_profile_id=dp))
    assert code_of(stubs["dev"].Create, bad_uuid, metadata=md)[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(stubs["dev"].Create, api.CreateDeviceRequest(), metadata=md) == (
        grpc.StatusCode.INVALID_ARGUMENT, "device is missing")
    no_name = api.CreateApplicationRequest(application=api.Application(tenant_id=cs.tenant_id))
    assert code_of(stubs["app"].Create, no_name, metadata=md) == (
        grpc.StatusCode.INVALID_ARGUMENT, "Validation error: name is not set")
    # a 1.0.x device's keys: the unused app_key must still be 32 hex digits
    keys = api.CreateDeviceKeysRequest(device_keys=api.DeviceKeys(dev_eui=EUI, nwk_key=KEY))
    assert code_of(stubs["dev"].CreateKeys, keys, metadata=md)[0] == grpc.StatusCode.INTERNAL
    no_profile = api.CreateDeviceRequest(device=api.Device(dev_eui="1112131415161718", name="x",
                                                           application_id=app, device_profile_id=app))
    assert code_of(stubs["dev"].Create, no_profile, metadata=md)[0] == grpc.StatusCode.INTERNAL
    assert set(cs.devices) == {EUI}


def test_stored_objects_come_back_as_chirpstack_returns_them(cs, stubs):
    md = auth(cs.token)
    make_device(cs, stubs, eui="A1B2C3D4E5F60718")
    got = stubs["dev"].Get(api.GetDeviceRequest(dev_eui="a1b2c3d4e5f60718"), metadata=md).device
    assert got.dev_eui == "a1b2c3d4e5f60718" and got.join_eui == "0000000000000000"
    gw = api.Gateway(gateway_id="0016C001F153A14C", name="gw", tenant_id=cs.tenant_id, stats_interval=30)
    stubs["gw"].Create(api.CreateGatewayRequest(gateway=gw), metadata=md)
    got = stubs["gw"].Get(api.GetGatewayRequest(gateway_id="0016c001f153a14c"), metadata=md).gateway
    assert got.downlink_priority == 10 and got.gateway_id == "0016c001f153a14c"
    got.downlink_priority = 0
    assert code_of(stubs["gw"].Update, api.UpdateGatewayRequest(gateway=got), metadata=md) == (
        grpc.StatusCode.INVALID_ARGUMENT, "Validation error: downlink_priority must be > 0")


def test_lists_are_ordered_paged_and_searched_by_name(cs, stubs):
    md = auth(cs.token)
    for name in ("zeta", "alpha", "civicedge-b", "civicedge-a"):
        make_app(cs, stubs, name=name)
    page = stubs["app"].List(api.ListApplicationsRequest(tenant_id=cs.tenant_id, limit=3), metadata=md)
    assert page.total_count == 4 and [a.name for a in page.result] == ["alpha", "civicedge-a", "civicedge-b"]
    rest = stubs["app"].List(api.ListApplicationsRequest(tenant_id=cs.tenant_id, limit=3, offset=3), metadata=md)
    assert [a.name for a in rest.result] == ["zeta"]
    found = stubs["app"].List(api.ListApplicationsRequest(tenant_id=cs.tenant_id, limit=10, search="CIVICEDGE"),
                              metadata=md)
    assert found.total_count == 2


def test_injected_faults_fail_the_nth_call_before_or_after_its_work(cs, stubs):
    md = auth(cs.token)
    cs.fail_call(2)
    make_app(cs, stubs, name="one")
    with pytest.raises(grpc.RpcError) as e:
        make_app(cs, stubs, name="two")
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert sorted(a.name for a in cs.applications.values()) == ["one"] and cs.mutations == 1
    cs.fail_call(1, after=True)  # the work is done, the reply is lost
    with pytest.raises(grpc.RpcError):
        make_app(cs, stubs, name="three")
    assert sorted(a.name for a in cs.applications.values()) == ["one", "three"] and cs.mutations == 2
    assert stubs["app"].List(api.ListApplicationsRequest(tenant_id=cs.tenant_id, limit=9), metadata=md).total_count == 2
    assert cs.calls_by_method["ApplicationService.Create"] == 3
