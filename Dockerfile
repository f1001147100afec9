# Image for the api, worker and ocr-worker services of docker-compose.yml.
FROM python:3.11-slim-bookworm
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      tesseract-ocr tesseract-ocr-deu tesseract-ocr-eng ghostscript pngquant unpaper \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY . /app
RUN pip install --no-cache-dir .
USER nobody
EXPOSE 8000
CMD ["aktenlauf", "api", "--host", "0.0.0.0", "--port", "8000"]
