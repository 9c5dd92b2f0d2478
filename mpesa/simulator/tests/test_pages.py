"""The virtual phone and traffic pages (HTML for people, so Django's test client is enough)."""

from mpesa.simulator.models import Payment, TrafficEntry
from mpesa.simulator.services import prune_traffic


def test_phone_page_lists_open_prompts_with_their_answers(client, push):
    checkout_id = push(phone="254700000000", amount=250).json()["CheckoutRequestID"]
    page = client.get("/daraja-sim/phone/").content.decode()
    assert checkout_id in page
    assert "Pay KES 250" in page
    for answer in ("pay", "cancel", "wrong_pin", "ignore"):
        assert f'value="{answer}"' in page


def test_paying_on_the_phone_page_sends_the_success_callback(client, push, listener, daraja_sim):
    checkout_id = push(phone="254700000000").json()["CheckoutRequestID"]
    response = client.post(f"/daraja-sim/phone/{checkout_id}/answer", {"answer": "pay"})
    assert response.status_code == 302
    daraja_sim.deliver()
    assert listener.bodies("/stk")[0]["Body"]["stkCallback"]["ResultCode"] == 0


def test_answering_a_decided_prompt_changes_nothing(client, push, listener, daraja_sim):
    checkout_id = push(phone="254700000000").json()["CheckoutRequestID"]
    client.post(f"/daraja-sim/phone/{checkout_id}/answer", {"answer": "cancel"})
    response = client.post(f"/daraja-sim/phone/{checkout_id}/answer", {"answer": "pay"}, follow=True)
    assert "already answered" in response.content.decode()
    daraja_sim.deliver()
    assert [b["Body"]["stkCallback"]["ResultCode"] for b in listener.bodies("/stk")] == [1032]


def test_c2b_form_sends_a_paybill_payment(client, daraja_sim):
    response = client.post("/daraja-sim/phone/c2b", {
        "shortcode": "174379", "amount": "75", "phone": "254708374149", "account": "INV-9", "first_name": "Amina",
    }, follow=True)
    assert "Paid KES 75" in response.content.decode()
    payment = Payment.objects.get()
    assert (payment.amount, payment.bill_ref_number, payment.first_name) == (75, "INV-9", "AMINA")


def test_c2b_form_explains_a_bad_phone_number(client, daraja_sim):
    response = client.post("/daraja-sim/phone/c2b", {
        "shortcode": "174379", "amount": "75", "phone": "0708", "first_name": "A",
    }, follow=True)
    assert "2547XXXXXXXX" in response.content.decode()
    assert not Payment.objects.exists()


def test_traffic_page_shows_what_was_received_and_sent(client, push, daraja_sim, listener):
    push()
    daraja_sim.deliver()
    page = client.get("/daraja-sim/traffic/").content.decode()
    assert "/daraja-sim/mpesa/stkpush/v1/processrequest" in page
    assert listener.url("/stk") in page
    assert "Bearer [redacted]" in page
    directions = [entry.direction for entry in daraja_sim.traffic()]
    assert directions == ["in", "in", "out"]  # token, push, callback


def test_old_traffic_is_pruned_to_the_newest_rows(daraja_sim):
    for n in range(5):
        TrafficEntry.objects.create(direction="in", method="POST", url=f"/{n}")
    assert prune_traffic(keep=2) == 3
    assert [entry.url for entry in daraja_sim.traffic()] == ["/3", "/4"]
