# main.py
#
# Bavard benchmark peer "draft": the original FastAPI draft from
# original-draft.md, copied verbatim (everything down to the end of
# websocket_endpoint). The only addition is the block at the bottom, marked
# "ADDED FOR THE BENCHMARKS", which serves /ws/chat/{room}; /ws/chat is
# untouched and is the same room as /ws/chat/chat.
# Run: uvicorn app:app --host 127.0.0.1 --port PORT --workers 1 --log-level warning
# (see ../start.sh).

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from typing import List

app = FastAPI()

class ConnectionManager:
    def __init__(self):
        self.active_connections: List[WebSocket] = []

    async def connect(self, websocket: WebSocket):
        await websocket.accept()
        self.active_connections.append(websocket)

    def disconnect(self, websocket: WebSocket):
        self.active_connections.remove(websocket)

    async def send_message(self, message: str, websocket: WebSocket):
        await websocket.send_text(message)

    async def broadcast(self, message: str):
        for connection in self.active_connections:
            await connection.send_text(message)

manager = ConnectionManager()

@app.websocket("/ws/chat")
async def websocket_endpoint(websocket: WebSocket):
    await manager.connect(websocket)
    try:
        while True:
            data = await websocket.receive_text()
            await manager.broadcast(f"Message reçu : {data}")
    except WebSocketDisconnect:
        manager.disconnect(websocket)
        await manager.broadcast("Un utilisateur s'est déconnecté.")


# --- ADDED FOR THE BENCHMARKS (not in the draft) ---------------------------
# One ConnectionManager per room, the draft's room "chat" being the draft's
# own `manager`; the handler body is the draft's with `manager` replaced by
# the room's manager.
rooms = {"chat": manager}

@app.websocket("/ws/chat/{room}")
async def websocket_room_endpoint(websocket: WebSocket, room: str):
    room_manager = rooms.setdefault(room, ConnectionManager())
    await room_manager.connect(websocket)
    try:
        while True:
            data = await websocket.receive_text()
            await room_manager.broadcast(f"Message reçu : {data}")
    except WebSocketDisconnect:
        room_manager.disconnect(websocket)
        await room_manager.broadcast("Un utilisateur s'est déconnecté.")
