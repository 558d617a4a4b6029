"""What Chromium does as the answerer to an offer asking for simulcast (issue 14).

Our server always offers (docs/ARCHITECTURE.md, "Negotiation"), while the usual
simulcast setups have the browser offer (RFC 8853 `a=simulcast:send` in its own
offer). Before choosing the signalling for simulcast publishing, this pins what the
installed Chromium does when the *offer* carries `a=rid:... recv` lines and
`a=simulcast:recv` on a receive-only video section, the shape our server would send:
whether its answer sends simulcast and how many encodings its sender then has.
Nothing here talks to our server: two peer connections in one page, the second
answering the first's (edited) offer.
"""

from __future__ import annotations

import pytest

SIMULCAST_ANSWER_JS = r"""
const done = arguments[arguments.length - 1];
(async () => {
  const offerer = new RTCPeerConnection();
  offerer.addTransceiver('video', {direction: 'recvonly'});
  const offer = await offerer.createOffer();
  // what our server would add to the publisher's receive-only video section
  const rids = ['h', 'm', 'l'];
  const extra = rids.map((r) => `a=rid:${r} recv`).join('\r\n') + `\r\na=simulcast:recv ${rids.join(';')}\r\n`;
  const sdp = offer.sdp.replace(/(m=video[^]*?)(a=rtcp-fb)/, (m, head, fb) => head + extra + fb)
    .replace(/(m=video[^]*?)(a=rtcp-fb)/, (m, head, fb) => head
      + 'a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r\n'
      + 'a=extmap:11 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id\r\n' + fb);
  const answerer = new RTCPeerConnection();
  await answerer.setRemoteDescription({type: 'offer', sdp});
  const canvas = document.createElement('canvas');
  canvas.width = 1280; canvas.height = 720;
  canvas.getContext('2d').fillRect(0, 0, 10, 10);
  const track = canvas.captureStream(30).getVideoTracks()[0];
  const [transceiver] = answerer.getTransceivers();
  transceiver.direction = 'sendonly';
  await transceiver.sender.replaceTrack(track);
  const answer = await answerer.createAnswer();
  await answerer.setLocalDescription(answer);
  const describe = (params) => params.encodings.map((e) => ({rid: e.rid ?? null,
    scale: e.scaleResolutionDownBy ?? null, maxBitrate: e.maxBitrate ?? null, active: e.active}));
  const negotiated = describe(transceiver.sender.getParameters());
  // what a page would then set: sizes and rates per layer, explicitly
  const params = transceiver.sender.getParameters();
  const layers = {h: [1, 1_500_000], m: [2, 500_000], l: [4, 150_000]};
  params.encodings.forEach((e) => { [e.scaleResolutionDownBy, e.maxBitrate] = layers[e.rid]; });
  await transceiver.sender.setParameters(params);
  done({offer: sdp, answer: answer.sdp, negotiated, set: describe(transceiver.sender.getParameters())});
})().catch((e) => done({error: String(e)}));
"""


@pytest.mark.browser
def test_chromium_answers_an_offer_asking_for_simulcast_with_three_encodings(netns, chromium):
    page = chromium("answerer")
    page.get("about:blank")
    result = page.execute_async_script(SIMULCAST_ANSWER_JS)
    assert "error" not in result, result
    print(result["answer"], result["negotiated"], result["set"])  # shown with -s
    video = result["answer"].split("m=video", 1)[1]
    assert "a=simulcast:send h;m;l" in video, video
    assert all(f"a=rid:{r} send" in video for r in "hml"), video
    assert [(e["rid"], e["active"]) for e in result["negotiated"]] == [("h", True), ("m", True), ("l", True)]
    # Chromium 156 reports no scale for the negotiated layers: a page sets sizes and rates itself
    assert [(e["rid"], e["scale"], e["maxBitrate"]) for e in result["set"]] == [
        ("h", 1, 1_500_000), ("m", 2, 500_000), ("l", 4, 150_000)], result["set"]
