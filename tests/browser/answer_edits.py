"""Edits a page's SDP answers for the video it receives, installed before the page's own scripts:
what a browser would answer without video NACK, or without video RED/ULPFEC."""

from __future__ import annotations

ANSWER_EDIT_JS = r"""
(() => {
  const [KEEP_NACK, KEEP_FEC] = [%s, %s];
  const edit = (sdp) => sdp.split(/\r\n(?=m=)/).map((section) => {
    if (!section.startsWith('m=video') || !/\r\na=recvonly/.test(section)) return section;
    let lines = section.split('\r\n').filter((l) => KEEP_NACK || !/^a=rtcp-fb:\d+ nack$/.test(l));
    if (!KEEP_FEC) {
      const fec = lines.map((l) => l.match(/^a=rtpmap:(\d+) (red|ulpfec)\/90000/)).filter(Boolean).map((m) => m[1]);
      const rtx = lines.map((l) => l.match(/^a=fmtp:(\d+) apt=(\d+)$/))
        .filter((m) => m && fec.includes(m[2])).map((m) => m[1]);
      const drop = new Set([...fec, ...rtx]);
      lines = lines.filter((l) => {
        const m = l.match(/^a=(?:rtpmap|fmtp|rtcp-fb):(\d+)/);
        return !m || !drop.has(m[1]);
      });
      const f = lines[0].split(' ');
      lines[0] = f.slice(0, 3).concat(f.slice(3).filter((pt) => !drop.has(pt))).join(' ');
    }
    return lines.join('\r\n');
  }).join('\r\n');
  const createAnswer = RTCPeerConnection.prototype.createAnswer;
  RTCPeerConnection.prototype.createAnswer = async function (...args) {
    const answer = await createAnswer.apply(this, args);
    return {type: answer.type, sdp: edit(answer.sdp)};
  };
})();
"""



def edit_answers(driver, *, video_nack: bool, video_fec: bool) -> None:
    """From the next page load on, answers drop video NACK and/or red/ulpfec as asked."""
    source = ANSWER_EDIT_JS % (str(video_nack).lower(), str(video_fec).lower())
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": source})
