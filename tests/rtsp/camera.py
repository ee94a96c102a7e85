#!/usr/bin/python3
"""A local RTSP camera for kaskade's tests: GStreamer's gst-rtsp-server serving a test pattern
at rtsp://127.0.0.1:PORT/cam, H.264 constrained baseline at 15 fps (a keyframe every --gop
frames, 15 by default) with G.711, AAC or Opus audio, or another codec to test refusals,
optionally behind basic authentication.

    /usr/bin/python3 tests/rtsp/camera.py --port 8554 [--auth user:pass] [--video h264|jpeg]
        [--audio pcmu|pcma|aac|opus|none] [--gop FRAMES]

Prints "camera ready" once it listens; runs until killed.
"""
import argparse
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

VIDEO = {
    "h264": "x264enc tune=zerolatency speed-preset=ultrafast key-int-max={gop} bitrate=300 "
    "option-string=scenecut=0 "
    "! video/x-h264,profile=constrained-baseline ! rtph264pay name=pay0 pt=96 config-interval=-1",
    "jpeg": "videoconvert ! video/x-raw,format=I420 ! jpegenc ! rtpjpegpay name=pay0 pt=26",
}
AUDIO = {
    "pcmu": "audio/x-raw,rate=8000,channels=1 ! mulawenc ! rtppcmupay name=pay1 pt=0",
    "pcma": "audio/x-raw,rate=8000,channels=1 ! alawenc ! rtppcmapay name=pay1 pt=8",
    "aac": "audio/x-raw,rate=16000,channels=1 ! voaacenc bitrate=32000 "
    "! rtpmp4gpay name=pay1 pt=97",
    # constant 64 kbit/s: 160 bytes a 20 ms packet, twice what kaskade's transcoder makes
    "opus": "audio/x-raw,rate=48000,channels=1 ! opusenc bitrate=64000 bitrate-type=cbr "
    "! rtpopuspay name=pay1 pt=98",
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--auth", help="user:pass required of every client")
    parser.add_argument("--video", choices=sorted(VIDEO), default="h264")
    parser.add_argument("--audio", choices=sorted(AUDIO) + ["none"], default="pcmu")
    parser.add_argument("--gop", type=int, default=15, help="frames from a keyframe to the next")
    args = parser.parse_args()

    Gst.init(None)
    launch = (
        "( videotestsrc is-live=true pattern=ball "
        "! video/x-raw,width=320,height=240,framerate=15/1 ! "
        + VIDEO[args.video].replace("{gop}", str(args.gop))
    )
    if args.audio != "none":
        launch += (
            " audiotestsrc is-live=true wave=sine freq=440 volume=0.3 ! " + AUDIO[args.audio]
        )
    launch += " )"

    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch)
    # one pipeline for every client, as a camera's one encoder, except with Opus audio: kaskade
    # plays a camera's Opus in a second session, and a shared gst-rtsp-server media refuses a
    # second session's PLAY (retina always asks for Range: npt=0.000-, the seek fails: 503)
    factory.set_shared(args.audio != "opus")
    if args.auth:
        user, password = args.auth.split(":", 1)
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string("media.factory.role", "user")
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(user, password), token)
        server.set_auth(auth)
        permissions = GstRtspServer.RTSPPermissions()
        permissions.add_role_from_structure(
            Gst.Structure.new_from_string(
                "user, media.factory.access=(boolean)true, media.factory.construct=(boolean)true"
            )
        )
        factory.set_permissions(permissions)
    server.get_mount_points().add_factory("/cam", factory)
    if server.attach(None) == 0:
        print(f"cannot listen on port {args.port}", file=sys.stderr)
        sys.exit(1)
    print("camera ready", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
